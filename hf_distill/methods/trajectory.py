"""The learner the matching objectives compare on, when it is trained between outer steps (DC's outer and inner loops).

Zhao, Mopuri & Bilen (*Dataset Condensation with Gradient Matching*, ICLR 2021) match gradients not only at a fresh
init: one init serves `outer_loop` matchings, and after each of them the learner is trained for `inner_loop` steps
on the synthetic set, so that the set is also matched along the path an evaluation learner takes. Here the learner
takes full-batch steps of the evaluation's optimiser (Adam, or SGD with momentum as `eval_protocol="sgd"`) at the
evaluation's rate. Its weights and optimiser state are plain tensors, saved with each checkpoint so that a resumed
run continues along the same path.
"""

import torch

from ..evaluation import learner_optimizer
from ..learners import soft_cross_entropy
from .unrolled import learner_logits


class LearnerTrajectory:
    """One learner init, trained a few steps on the synthetic set after each outer step of its cycle.

    `cycle` numbers the init (outer step // `outer_loop`); `step` is the outer step up to which it has been trained.
    """

    def __init__(self, params: dict, *, cycle: int, step: int, lr: float, optimizer: str = "adam"):
        self.cycle, self.step, self.optimizer_name, self.lr = cycle, step, optimizer, lr
        self.params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        self.optimizer = learner_optimizer(self.params.values(), optimizer, lr)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.items()}  # a copy: the optimiser steps in place

    def advance(self, learner, inputs, attention_mask, labels, steps: int) -> None:
        """`steps` full-batch steps on the (detached) synthetic set."""
        inputs, labels = inputs.detach(), labels.detach()
        with torch.enable_grad():
            for _ in range(steps):
                self.optimizer.zero_grad()
                soft_cross_entropy(learner_logits(learner, self.params, inputs, attention_mask), labels).backward()
                self.optimizer.step()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights and optimiser state as named tensors (for safetensors); `from_tensors` reads them back."""
        out = {f"params.{k}": v.detach().cpu().contiguous() for k, v in self.params.items()}
        names = list(self.params)
        for index, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                out[f"state.{names[index]}.{key}"] = torch.as_tensor(value).cpu().contiguous()
        return out

    def metadata(self) -> dict[str, str]:
        return {
            "cycle": str(self.cycle),
            "step": str(self.step),
            "optimizer": self.optimizer_name,
            "lr": repr(self.lr),
        }

    @classmethod
    def from_tensors(cls, tensors: dict, metadata: dict, device=None) -> "LearnerTrajectory":
        params = {k.removeprefix("params."): v.to(device) for k, v in tensors.items() if k.startswith("params.")}
        trajectory = cls(
            params,
            cycle=int(metadata["cycle"]),
            step=int(metadata["step"]),
            lr=float(metadata["lr"]),
            optimizer=metadata["optimizer"],
        )
        names = list(params)
        state = {}
        for key, value in tensors.items():
            if key.startswith("state."):
                name, _, field = key.removeprefix("state.").rpartition(".")
                state.setdefault(names.index(name), {})[field] = value.to(device) if field != "step" else value
        trajectory.optimizer.load_state_dict(
            {"state": state, "param_groups": trajectory.optimizer.state_dict()["param_groups"]}
        )
        return trajectory
