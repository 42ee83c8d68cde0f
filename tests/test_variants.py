"""Editing variants by name (romelib.editing.variants): each name changes the shipped settings
in exactly the fields it names, and an unknown name is refused with the list."""
from dataclasses import asdict

import pytest

from romelib.core.hparams import load_hparams
from romelib.editing.finetune import FTHyperParams
from romelib.editing.rome import resolve_hparams
from romelib.editing.variants import VARIANTS, method_and_hparams, method_of

CHANGED = {"rome": {}, "rome-identity": {"identity_covariance": True},
           "rome-kl-last": {"kl_token": "last", "early_stop_nll": None},
           "rome-consistent": {"update_key": "average"}}


def differences(a, b) -> dict:
    a, b = asdict(a), asdict(b)
    return {k: b[k] for k in a if a[k] != b[k]}


@pytest.mark.parametrize("name", list(CHANGED))
def test_rome_variants_change_only_what_they_name(default_mt, name):
    method, hparams = method_and_hparams(default_mt, name)
    assert method == method_of(name) == "rome"
    assert differences(resolve_hparams(default_mt, None), hparams) == CHANGED[name]


@pytest.mark.parametrize("name", ["ft", "ft+l", "ft-rome-layer", "ft+l-rome-layer"])
def test_fine_tuning_variants_keep_their_tuned_settings(default_mt, name):
    method, hparams = method_and_hparams(default_mt, name)
    assert method == method_of(name) == name.removesuffix("-rome-layer")
    tuned = load_hparams(FTHyperParams, method, default_mt.name)
    moved = {"layer": resolve_hparams(default_mt, None).layer} if name.endswith("-rome-layer") else {}
    assert differences(tuned, hparams) == {k: v for k, v in moved.items() if v != tuned.layer}


def test_every_name_resolves_and_unknown_names_are_refused(default_mt):
    assert method_and_hparams(default_mt, "none") == (None, None)
    assert method_and_hparams(default_mt, "memit")[0] == "memit"
    for bad in ("ROME", "rome-", "r-rome", ""):
        with pytest.raises(ValueError, match="name must be one of") as error:
            method_and_hparams(default_mt, bad)
        assert repr(bad) in str(error.value) and all(v in str(error.value) for v in VARIANTS)
        with pytest.raises(ValueError, match="name must be one of"):
            method_of(bad)
