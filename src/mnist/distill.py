"""Knowledge distillation (Hinton et al., 2015): the student learns from the labels and from a trained teacher's
softened outputs on the same augmented batch. The teacher is any checkpoint `src.train` wrote, with no parameter
limit; `src.mnist.record.load_teacher` reads it as every checkpoint is read (`weights_only=True`, its `_target_`s
allowlisted)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from src.core.errors import UserError


class Distillation:
    """The student's training loss: (1 - weight) × its own loss on the labels + weight × T² × KL(teacher ‖ student)
    at temperature T (the T² keeps the soft term's gradients on the labels' scale as T changes).

    A plain object, not a submodule: the teacher's weights stay out of the student's parameter count, optimiser,
    EMA and checkpoints, and a student's checkpoint is evaluated without the teacher. The teacher is given when a
    training run starts (`use_teacher`), so that `src.eval` of a distilled student never reads the teacher's file.
    """

    def __init__(self, checkpoint: str, weight: float = 0.5, temperature: float = 4.0) -> None:
        if not 0 <= weight <= 1:
            raise UserError(f"distill.weight={weight} must be between 0 (labels only) and 1 (teacher only)")
        if temperature <= 0:
            raise UserError(f"distill.temperature={temperature} must be > 0 (4 is usual; 1 leaves outputs as they are)")
        self.checkpoint = checkpoint
        self.weight = weight
        self.temperature = temperature
        self.teacher: nn.Module | None = None

    def use_teacher(self, teacher: nn.Module) -> None:
        self.teacher = teacher.eval().requires_grad_(False)

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        """Puts the teacher on the student's device and dtype (the student's are known only when training starts)."""
        if self.teacher is None:
            raise RuntimeError("Distillation.to before use_teacher: src.mnist.run gives the teacher before fitting")
        self.teacher = self.teacher.to(device=device, dtype=dtype)

    def loss(self, images: torch.Tensor, log_probs: torch.Tensor, label_loss: torch.Tensor) -> torch.Tensor:
        """The student's loss on this batch; the teacher sees the same (augmented) images, without gradients."""
        if self.teacher is None:
            raise RuntimeError("Distillation.loss before use_teacher: src.mnist.run gives the teacher before fitting")
        with torch.no_grad():
            teacher_log_probs = self.teacher(images).float()
        temperature = self.temperature
        soft = F.kl_div(
            F.log_softmax(log_probs.float() / temperature, dim=1),
            F.log_softmax(teacher_log_probs / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.weight) * label_loss + self.weight * temperature**2 * soft
