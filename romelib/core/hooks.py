"""Context managers that read or replace the inputs and outputs of modules.

Usage::

    with romelib.hooks(mt, ["block.3", "mlp.3"]) as acts:
        mt.model(**inputs)
    acts["block.3"].output            # (batch, position, d_model)

    def zero_mlp(output, name):       # replace what a component adds to the residual
        return torch.zeros_like(output)
    with romelib.hooks(mt, ["mlp.3"], edit_output=zero_mlp):
        mt.model(**inputs)

    with romelib.hooks(mt, ["block.2"], stop=True) as acts:   # stop after layer 2
        mt.model(**inputs)

Names are ``"<component>.<layer>"`` for per-layer components (``block``, ``attn``,
``mlp``, ``mlp_proj``) and plain ``"embed"``, ``"final_norm"``, ``"unembed"``; the
component table decides which real module each name means.  Hooks are removed when
the ``with`` block ends, also when it ends with an exception.  For modules that return
a tuple (attention returns ``(output, weights)``) the edit functions see and replace
the first element only.  This follows the design of ``Trace``/``TraceDict`` in the
ROME authors' ``nethook`` and TransformerLens's named hook points.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

EditFn = Callable[[torch.Tensor, str], torch.Tensor]


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; caught by the context manager."""


def hook_name(component: str, layer: int | None = None) -> str:
    """Usage: ``hook_name("mlp", 5)`` -> ``"mlp.5"``."""
    return component if layer is None else f"{component}.{layer}"


def parse_hook_name(name: str | tuple) -> tuple[str, int | None]:
    """Usage: ``parse_hook_name("mlp.5")`` -> ``("mlp", 5)``."""
    if isinstance(name, tuple):
        return name[0], (None if len(name) < 2 else name[1])
    component, _, layer = name.partition(".")
    if not layer:
        return component, None
    try:
        return component, int(layer)
    except ValueError:
        raise ValueError(f"Hook name {name!r} should look like 'mlp.5' or 'embed'.") from None


def _first_tensor(value):
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value, new):
    return (new, *value[1:]) if isinstance(value, tuple) else new


class Trace:
    """Hook one module: keep its input/output, optionally replace them, optionally stop.

    Usage: ``with Trace(model.model.layers[3]) as t: model(x)``; then ``t.output``.
    """

    def __init__(self, module: nn.Module, name: str = "", *, retain_input: bool = False,
                 retain_output: bool = True, edit_input: EditFn | None = None,
                 edit_output: EditFn | None = None, clone: bool = False, detach: bool = False,
                 stop: bool = False, on_fire: Callable[[str], None] | None = None):
        self.module, self.name = module, name
        self.retain_input, self.retain_output = retain_input, retain_output
        self.edit_input, self.edit_output = edit_input, edit_output
        self.clone, self.detach, self.stop, self.on_fire = clone, detach, stop, on_fire
        self.input = self.output = None
        self._handles: list = []

    def _keep(self, tensor):
        if self.detach:
            tensor = tensor.detach()
        return tensor.clone() if self.clone else tensor

    def _pre_hook(self, module, args, kwargs):
        if args:
            hidden, replace = args[0], lambda new: ((new, *args[1:]), kwargs)
        else:  # some models call sub-modules with keyword arguments only
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            hidden, replace = kwargs[key], lambda new: (args, {**kwargs, key: new})
        if self.edit_input is not None:
            hidden = self.edit_input(hidden, self.name)
            result = replace(hidden)
        else:
            result = None
        if self.retain_input:
            self.input = self._keep(hidden)
        return result

    def _hook(self, module, args, output):
        if self.edit_output is not None:
            output = _replace_first(output, self.edit_output(_first_tensor(output), self.name))
        if self.retain_output:
            self.output = self._keep(_first_tensor(output))
        if self.on_fire is not None:
            self.on_fire(self.name)
        if self.stop:
            raise StopForward()
        return output

    def __enter__(self):
        try:
            if self.retain_input or self.edit_input is not None:
                self._handles.append(
                    self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(self.module.register_forward_hook(self._hook))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the hooks (also done on leaving the ``with`` block)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(dict):
    """Several :class:`Trace` at once, keyed by name; ``stop=True`` stops once all have run.

    Usage: ``with TraceDict({"a": m1, "b": m2}) as td: model(x)``; then ``td["a"].output``.
    """

    def __init__(self, modules: Mapping[str, nn.Module], *, stop: bool = False, **flags):
        super().__init__()
        self._stop, self._fired = stop, set()
        for name, module in modules.items():
            self[name] = Trace(module, name, on_fire=self._fire, **flags)

    def _fire(self, name: str) -> None:
        self._fired.add(name)
        if self._stop and len(self._fired) == len(self):
            raise StopForward()

    def __enter__(self):
        entered = []
        try:
            for trace in self.values():
                entered.append(trace.__enter__())
        except BaseException:
            for trace in entered:
                trace.close()
            raise
        return self

    def close(self) -> None:
        """Remove every hook."""
        for trace in self.values():
            trace.close()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def hooks(mt, names: Iterable[str | tuple], **flags) -> TraceDict:
    """Hook components of ``mt`` by name (``"block.3"``, ``("mlp", 3)``, ``"embed"``).

    Usage: ``with hooks(mt, ["block.3"], stop=True) as acts: mt.model(**inputs)``.
    Flags are those of :class:`Trace` plus ``stop``.
    """
    modules = {}
    for name in names:
        component, layer = parse_hook_name(name)
        modules[hook_name(component, layer)] = mt.module(component, layer)
    return TraceDict(modules, **flags)
