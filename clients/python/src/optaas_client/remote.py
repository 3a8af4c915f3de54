"""`RemoteOptimizer`: a `torch.optim.Optimizer` whose θ, state and schedule live in a session.

The class subclasses torch's, so it is made on first use (the module's `__getattr__`):
importing this module, or `optaas_client`, does not import torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from optaas_client.errors import ProtocolError
from optaas_client.tensors import Params, SparseRows
from optaas_client.torch_interop import (
    NamedParameters,
    checked_names,
    named_parameters,
    plain,
)

if TYPE_CHECKING:
    import torch

    from optaas_client.client import Client
    from optaas_client.session import Session

REMOTE_STATE_FORMAT = "optaas-remote-optimizer/1"


def __getattr__(name: str) -> Any:
    # `RemoteOptimizer` subclasses torch.optim.Optimizer, so it is built on first use:
    # importing this module must not import torch.
    if name == "RemoteOptimizer":
        return _remote_optimizer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _remote_optimizer_class() -> type:
    import torch

    class RemoteOptimizer(torch.optim.Optimizer):
        """A torch optimizer whose θ, state and schedule live in an optaas session.

        `step()` posts the parameters' gradients (tensors whose `grad` is None are left out,
        as a partial step) and copies the parameters the service answers into them, in place.
        A sparse gradient (`nn.Embedding(sparse=True)`'s `torch.sparse_coo_tensor`) travels as
        sparse rows, coalesced by torch as its `SparseAdam` coalesces them, and only the rows
        the step changed come back; the session's optimizer must take sparse rows
        (`sparse_adam`, `adagrad`, `sgd` without momentum), as torch's must. `zero_grad()` is
        torch's.

        `eval()` and `train()` switch the model's weights as `schedulefree`'s optimizers do:
        `eval()` writes the weights to evaluate (`GET …/params?for=eval`: schedule-free's x,
        ASGD's average, θ for the other types) into the parameters, `train()` writes θ (y, where
        gradients are taken) back; `step()` in eval mode is an error.

        Pass a module, `model.named_parameters()` or tensors (named "0", "1", …), and either
        the settings of a new session (`client`, `optimizer`, …) or an existing `session`,
        whose θ is then copied into the parameters.

        `param_groups[0]["lr"]` is the rate of the latest step (η_0 before any); set it (by
        hand or with a torch LR scheduler) on a session with a constant schedule and the next
        `step()` first changes the session's `lr` to it (PATCH). `state_dict()` is the
        session's export (tensors as torch tensors, so `torch.save`/`torch.load` keep it);
        `load_state_dict()` imports it as a new session — the old one is left as it is — and
        copies its θ into the parameters.
        """

        def __init__(
            self,
            params: NamedParameters,
            *,
            client: Client | None = None,
            session: Session | None = None,
            optimizer: Mapping[str, Any] | str | None = None,
            wait_timeout: float | None = None,
            **session_settings: Any,
        ) -> None:
            named = _named_or_numbered(params)
            self._accepting_groups = True
            super().__init__(named, {})
            self._accepting_groups = False
            self.names = [tensor_name for tensor_name, _ in named]
            self.wait_timeout = wait_timeout
            self.train_mode = True
            if session is None:
                if client is None or optimizer is None:
                    raise TypeError("give a session, or a client and an optimizer spec")
                session = client.create_session(
                    self._numpy_params(), optimizer=optimizer, **session_settings
                )
            elif session_settings or optimizer is not None:
                raise TypeError("an existing session keeps its settings: give them to patch()")
            self._attach(session)

        # -- torch's interface ---------------------------------------------------------

        def add_param_group(self, param_group: dict[str, Any]) -> None:
            if not getattr(self, "_accepting_groups", False):
                raise NotImplementedError("a session's tensors are fixed when it is created")
            super().add_param_group(param_group)

        @torch.no_grad()
        def step(
            self, closure: Callable[[], Any] | None = None, *, loss: float | None = None
        ) -> Any:
            """Post the gradients (with `loss`, or the closure's, for the history and
            `reduce_on_plateau`) and write the new parameters into the model."""
            if not self.train_mode:
                raise RuntimeError(
                    "the optimizer is in eval mode (the parameters hold the weights to "
                    "evaluate): call train() before step()"
                )
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            grads = {
                tensor_name: _gradient(tensor.grad)
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True)
                if tensor.grad is not None
            }
            if not grads:
                return loss
            self._apply_lr_change()
            new_params = self.session.step(
                grads,
                loss=None if loss is None else float(plain(loss)),
                partial=len(grads) < len(self.names),
                wait=True,
                wait_timeout=self.wait_timeout,
            )
            self._write(new_params)
            if self.session.last_step is not None and self.session.last_step.lr is not None:
                self._show_lr(self.session.last_step.lr)
            return loss

        def eval(self) -> None:
            """Write the weights to evaluate into the parameters (schedulefree's `eval()`)."""
            if self.train_mode:
                self._write(self.session.params(for_eval=True))
                self.train_mode = False

        def train(self) -> None:
            """Write θ, where the next gradient is taken, back into the parameters."""
            if not self.train_mode:
                self._write(self.session.params())
                self.train_mode = True

        def state_dict(self) -> dict[str, Any]:
            export = self.session.export()
            return {"format": REMOTE_STATE_FORMAT, "export": _export_as_torch(export)}

        def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
            if state_dict.get("format") != REMOTE_STATE_FORMAT:
                raise ValueError(f"not a RemoteOptimizer state dict ({REMOTE_STATE_FORMAT})")
            export = _export_from_torch_tensors(state_dict["export"])
            checked_names(export, self.names)
            self._attach(self.session.client.import_session(export))

        # -- internals -----------------------------------------------------------------

        def _tensors(self) -> list[torch.Tensor]:
            return list(self.param_groups[0]["params"])

        def _numpy_params(self) -> dict[str, np.ndarray]:
            return {
                tensor_name: _numpy(tensor)
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True)
            }

        def _attach(self, session: Session) -> None:
            shapes = {
                tensor_name: tuple(tensor.shape)
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True)
            }
            if session.layout != "named" or session.shapes != shapes:
                raise ValueError(
                    f"session {session.id} holds {session.shapes}, the parameters are {shapes}"
                )
            self.session = session
            self.train_mode = True
            self._write(session.params())
            self._show_lr(session.view.get("lr"))

        def _write(self, new_params: Params | None) -> None:
            if not isinstance(new_params, Mapping):
                raise ProtocolError("the session did not answer with named parameters")
            with torch.no_grad():
                for tensor_name, tensor in zip(self.names, self._tensors(), strict=True):
                    value = new_params[tensor_name]
                    if isinstance(value, SparseRows):  # only the rows the step changed
                        rows = torch.from_numpy(np.asarray(value.rows, np.int64))
                        tensor[rows] = torch.from_numpy(np.array(value.values, copy=True))
                    else:
                        tensor.copy_(torch.from_numpy(np.array(value, copy=True)))

        def _show_lr(self, lr: float | None) -> None:
            self._shown_lr = lr
            self.param_groups[0]["lr"] = lr

        def _apply_lr_change(self) -> None:
            """A new `lr` in the param group (a torch LR scheduler's, say) becomes the
            session's: torch's schedulers set the rate outright, which is the session's base
            rate only under a constant schedule."""
            wanted = self.param_groups[0].get("lr")
            if wanted is None or wanted == self._shown_lr:
                return
            schedule = self.session.view.get("schedule") or {"type": "constant"}
            if schedule["type"] != "constant":
                raise ValueError(
                    "param_groups[0]['lr'] was changed, but this session's rate follows its "
                    f"{schedule['type']!r} schedule; change it with session.patch(...)"
                )
            self.session.patch(optimizer={"lr": float(wanted)})
            self._show_lr(float(wanted))

    RemoteOptimizer.__module__ = "optaas_client"
    RemoteOptimizer.__qualname__ = "RemoteOptimizer"
    return RemoteOptimizer


def _named_or_numbered(params: NamedParameters) -> list[tuple[str, torch.Tensor]]:
    """Named parameters as given, or plain tensors named by position ("0", "1", …)."""
    if hasattr(params, "named_parameters") or isinstance(params, Mapping):
        return named_parameters(params)
    items = list(params)
    if items and isinstance(items[0], tuple):
        return [(str(name), tensor) for name, tensor in items]
    if items and isinstance(items[0], dict):
        raise TypeError("RemoteOptimizer takes no torch param groups: use the session's groups=")
    return [(str(index), tensor) for index, tensor in enumerate(items)]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.is_sparse:
        tensor = tensor.to_dense()
    return tensor.detach().cpu().numpy()


def _gradient(grad: torch.Tensor) -> np.ndarray | SparseRows:
    """A gradient for the wire: dense as it is; a sparse COO gradient whose sparse dimension
    is the first (an embedding table's rows) as `SparseRows`, coalesced by torch (repeated
    rows summed in torch's order, as torch's sparse optimizers sum them); any other sparse
    layout dense."""
    if grad.is_sparse and grad.sparse_dim() == 1 and grad.dim() >= 2:
        grad = grad.detach().coalesce()
        return SparseRows(grad.indices()[0].cpu().numpy(), grad.values().cpu().numpy())
    return _numpy(grad)


def _export_as_torch(export: Mapping[str, Any]) -> dict[str, Any]:
    """An export with torch tensors for arrays: `torch.load(weights_only=True)` reads it."""
    import torch

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.array(value, copy=True))
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        return value

    return {key: convert(value) for key, value in export.items()}


def _export_from_torch_tensors(export: Mapping[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if hasattr(value, "numpy") and hasattr(value, "detach"):
            return value.detach().cpu().numpy()
        if isinstance(value, Mapping):
            return {key: convert(item) for key, item in value.items()}
        return value

    return {key: convert(value) for key, value in export.items()}
