"""The catalog of optimizer types: for each, its factory, the name its spec goes by in the API
documents, and the reference it agrees with.

The factory's keyword parameters — their names, type hints and defaults — are the type's fields
and nothing else is: the wire models (`app.schemas`), the OpenAPI document, the web page's form
and the TypeScript client's types are all derived from them. A nested spec (`custom`'s
`momentum` and `sigma`) is described by a factory of its own, named in `nested`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.optim import learning_rate_free as lrf
from app.optim import optimizers as opt


@dataclass(frozen=True)
class Entry:
    """One optimizer type.

    `title` names its spec in the OpenAPI document (the reference's class name where there is
    one); `reference` is what its numbers agree with; `family` groups the types in the docs;
    `nested` maps a field holding a spec of its own to (that spec's title, its factory)."""

    type: str
    title: str
    reference: str
    family: str
    nested: Mapping[str, tuple[str, Callable[..., Any]]] = field(default_factory=dict)

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory whose keyword parameters are the type's fields."""
        return opt.OPTIMIZERS[self.type]


TORCH = "torch.optim"
LECTURE = "the lecture's general form"
OPTAX = "optax"
LEARNING_RATE_FREE = "learning-rate-free"

CATALOG: tuple[Entry, ...] = (
    Entry("sgd", "SGD", "torch.optim.SGD", TORCH),
    Entry("adagrad", "Adagrad", "torch.optim.Adagrad", TORCH),
    Entry("rmsprop", "RMSprop", "torch.optim.RMSprop", TORCH),
    Entry("adam", "Adam", "torch.optim.Adam", TORCH),
    Entry("adamw", "AdamW", "torch.optim.AdamW", TORCH),
    Entry("adamax", "Adamax", "torch.optim.Adamax", TORCH),
    Entry("nadam", "NAdam", "torch.optim.NAdam", TORCH),
    Entry("radam", "RAdam", "torch.optim.RAdam", TORCH),
    Entry("adadelta", "Adadelta", "torch.optim.Adadelta", TORCH),
    Entry("adafactor", "Adafactor", "torch.optim.Adafactor", TORCH),
    Entry("muon", "Muon", "torch.optim.Muon", TORCH),
    Entry("rprop", "Rprop", "torch.optim.Rprop", TORCH),
    Entry("asgd", "ASGD", "torch.optim.ASGD", TORCH),
    Entry("sparse_adam", "SparseAdam", "torch.optim.SparseAdam", TORCH),
    Entry("lion", "Lion", "optax.lion (the paper's rule)", OPTAX),
    Entry("yogi", "Yogi", "optax.yogi", OPTAX),
    Entry("lamb", "LAMB", "optax.lamb", OPTAX),
    Entry("lars", "LARS", "optax.lars", OPTAX),
    Entry("adabelief", "AdaBelief", "optax.adabelief", OPTAX),
    Entry("novograd", "NovoGrad", "optax.novograd", OPTAX),
    Entry("adan", "Adan", "optax.adan", OPTAX),
    Entry(
        "schedule_free_adamw",
        "ScheduleFreeAdamW",
        "schedulefree.AdamWScheduleFree",
        LEARNING_RATE_FREE,
    ),
    Entry(
        "schedule_free_sgd", "ScheduleFreeSGD", "schedulefree.SGDScheduleFree", LEARNING_RATE_FREE
    ),
    Entry("prodigy", "Prodigy", "prodigyopt.Prodigy", LEARNING_RATE_FREE),
    Entry("dadapt_adam", "DAdaptAdam", "dadaptation.DAdaptAdam", LEARNING_RATE_FREE),
    Entry("dadapt_sgd", "DAdaptSGD", "dadaptation.DAdaptSGD", LEARNING_RATE_FREE),
    Entry("dadapt_adagrad", "DAdaptAdaGrad", "dadaptation.DAdaptAdaGrad", LEARNING_RATE_FREE),
    Entry("dog", "DoG", "dog-optimizer DoG", LEARNING_RATE_FREE),
    Entry("ldog", "LDoG", "dog-optimizer LDoG", LEARNING_RATE_FREE),
    Entry(
        "custom",
        "Custom",
        "the formula θ ← θ − η_t/(σ_t + eps)·m_t",
        LECTURE,
        nested={
            "momentum": ("CustomMomentum", opt.custom_momentum),
            "sigma": ("CustomSigma", opt.custom_sigma),
        },
    ),
)
"""Every optimizer type, in the order the documents list them."""

ENTRIES: dict[str, Entry] = {entry.type: entry for entry in CATALOG}

CHOOSES_ITS_STEP_SIZE = frozenset(lrf.LEARNING_RATE_FREE)
"""The types whose step's `lr` is the step size they chose (d·lr, DoG's η, the warmed-up
rate), not the scheduled η_t."""
