"""The template of the three tasks, in the manner of TorchGeo's ``BaseTask``.

A task's ``__init__`` takes plain keyword arguments (LightningCLI configs set them; ``load_from_checkpoint``
passes them back) and hands its module arguments to :class:`SceneTask`, which

1. saves every constructor argument as a hyper-parameter, modules as ``{"class_path", "init_args"}`` specs
   (:meth:`module_specs`), so a checkpoint rebuilds its task without pickled code;
2. calls the hooks :meth:`configure_models` (builds ``self.geometry``, a
   :class:`~ctxir.tasks.backbone.GeometryBackbone`, and whatever the task adds), :meth:`configure_losses` and
   :meth:`configure_metrics`.

Shared behaviour: the optimiser and learning-rate schedule, the validation metrics, and the paper's test
protocol. Validation logs (synchronised across DDP ranks by torchmetrics):

* ``val/udf_mae`` and ``val/udf_mae/sigma_<σ>`` — error of the predicted distances, both sides clamped at the
  loss's clamp, overall and per σ pool of the queries;
* ``val/miou``, ``val/f1`` and ``val/f1/<class>`` where the task predicts classes.

Test (SPEC §4): per scene the surface is extracted from the UDF, ``test_num_points`` points are sampled on it,
labelled by the semantic decoder where the task has one, and scored against the scene's GT evaluation points:
``test/cd_l1``, ``test/cd_l2``, ``test/f1``, ``test/f1_2delta`` and ``test/miou``, ``test/mf1``,
``test/mf1_2delta`` (raw values; :class:`~ctxir.tasks.TestReport` prints them as Table 1).

A diverged model gets no score: NaN or Inf in its outputs at validation or test, in the UDF during extraction,
or in the weights of a checkpoint it loads raises a ``FloatingPointError`` naming what, the scenes and the step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from ctxir.data.keys import Key
from ctxir.data.mesh import IGNORE_LABEL
from ctxir.eval import ReconstructionMetrics, SemanticMetrics, extract_mesh
from ctxir.eval.metrics import UDFError
from ctxir.eval.sampling import sample_mesh_surface
from ctxir.nn.config import ModuleOrSpec, build_module, module_spec
from ctxir.tasks.backbone import GeometryBackbone
from ctxir.tasks.checkpoint import STAGE_KEY, check_finite_state

Batch = dict[str, Any]
LRSchedule = Literal["one_cycle", "constant"]
TEST_BOUNDS = ((-0.55, -0.55, -0.55), (0.55, 0.55, 0.55))
"""Extraction grid: the unit cube of the normalised scenes plus a margin, so surfaces on its faces are kept."""
DEFAULT_SIGMAS: tuple[float, ...] = (0.08, 0.02, 0.003)
"""σ of the query pools when the DataModule does not say (the NDF/RangeUDF recipe)."""


def num_clouds(batch: Batch) -> int:
    """Scenes in a collated batch."""
    return len(batch[Key.SCENE])


def sigma_name(sigma: float) -> str:
    """Log-name suffix of a σ pool: ``sigma_0.003``."""
    return f"sigma_{sigma:g}"


class SceneTask(L.LightningModule):
    """Base of the three tasks.

    Args (every task's, after its own; all keyword-only):
        lr: peak learning rate of Adam.
        lr_schedule: ``"one_cycle"`` (default): linear-cosine warm-up over ``warmup_fraction`` of the steps to
            ``lr``, then cosine annealing to ``lr / 1e4`` (``torch.optim.lr_scheduler.OneCycleLR``, one cycle over
            the whole fit). ``"constant"``: the paper's constant ``lr``. A fit of a few hundred steps ends far
            more precise with the annealing (``benchmarks/bench_geometry.py``); LightningCLI's
            ``--lr_scheduler`` replaces either.
        warmup_fraction: share of the steps spent warming up (``one_cycle``).
        clamp: distance clamp of the UDF loss and error (NDF: 0.1).
        class_names: names of the classes (per-class logging); adopted from the DataModule when unset.
        test_resolution: extraction grid nodes per axis at test time.
        test_num_points: points sampled on the extracted surface at test time (paper: 100,000).
    """

    stage: str = ""
    """The stage a checkpoint of this task records (:data:`~ctxir.tasks.checkpoint.STAGES`)."""
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    geometry: GeometryBackbone

    def __init__(
        self,
        *,
        modules: Mapping[str, ModuleOrSpec | None],
        lr: float = 1e-3,
        lr_schedule: LRSchedule = "one_cycle",
        warmup_fraction: float = 0.1,
        clamp: float = 0.1,
        class_names: Sequence[str] | None = None,
        test_resolution: int = 256,
        test_num_points: int = 100000,
    ) -> None:
        super().__init__()
        if lr_schedule not in ("one_cycle", "constant"):
            raise ValueError(f"lr_schedule must be 'one_cycle' or 'constant', got {lr_schedule!r}")
        if not 0.0 < warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {warmup_fraction}")
        for option, value in {"lr": lr, "clamp": clamp}.items():
            if not value > 0:
                raise ValueError(f"{type(self).__name__}: {option} must be positive, got {value!r}")
        for option, value, minimum in (("test_resolution", test_resolution, 2), ("test_num_points", test_num_points, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{type(self).__name__}: {option} must be an integer >= {minimum}, got {value!r}")
        # every constructor argument of the task (Lightning collects the subclasses' from their frames)
        self.save_hyperparameters(ignore=["modules", *modules])
        self.given = {name: None if value is None else build_module(value) for name, value in modules.items()}
        self.configure_models()
        for name, module in self.module_specs().items():
            self.hparams[name] = None if module is None else module_spec(module)
        del self.given
        self.configure_losses()
        self.configure_metrics()

    # -- the hooks -------------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build ``self.geometry`` and the task's own modules (``self.given`` holds the module arguments)."""
        raise NotImplementedError

    def module_specs(self) -> dict[str, nn.Module | None]:
        """The modules whose specs the checkpoint stores, by constructor-argument name."""
        return dict(self.geometry.named_children())

    def configure_losses(self) -> None:
        """Build the task's losses."""

    def configure_metrics(self) -> None:
        """Validation and test metrics; semantic ones when the task predicts classes."""
        self.val_udf_error = UDFError(len(DEFAULT_SIGMAS), self.hparams.clamp)
        self.sigmas: tuple[float, ...] = DEFAULT_SIGMAS
        self.test_reconstruction = ReconstructionMetrics()
        classes = self.num_classes
        self.test_semantics = SemanticMetrics(classes) if classes else None
        if classes:
            self.val_miou = MulticlassJaccardIndex(classes, ignore_index=IGNORE_LABEL, average="macro")
            self.val_f1 = MulticlassF1Score(classes, ignore_index=IGNORE_LABEL, average="macro")
            self.val_f1_per_class = MulticlassF1Score(classes, ignore_index=IGNORE_LABEL, average=None)

    def semantic_decoder_or_none(self) -> nn.Module | None:
        """The semantic decoder, for tasks that predict classes."""
        return getattr(self, "semantic_decoder", None)

    def semantic_features(self, batch: Batch, encodings: Tensor) -> Tensor | None:
        """Per-point features the semantic decoder reads (``None`` without a semantic decoder)."""
        return None

    # -- shared behaviour --------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        decoder = self.semantic_decoder_or_none()
        return int(decoder.num_classes) if decoder is not None else 0

    @property
    def class_names(self) -> list[str]:
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    def setup(self, stage: str) -> None:
        """Check the classes against the DataModule's, adopt its class names and its σ pools."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        sigmas = tuple(getattr(datamodule, "sigmas", ()) or ())
        if sigmas and sigmas != self.sigmas:
            self.sigmas = sigmas
            self.val_udf_error = UDFError(len(sigmas), self.hparams.clamp)
        data_classes = getattr(datamodule, "num_classes", None)
        if not self.num_classes or not data_classes:
            return
        if data_classes != self.num_classes:
            raise ValueError(
                f"the semantic decoder predicts {self.num_classes} classes but {type(datamodule).__name__} has "
                f"{data_classes}"
            )
        if not self.hparams.get("class_names"):
            self.hparams["class_names"] = list(datamodule.class_names)
        elif len(self.hparams["class_names"]) != self.num_classes:
            raise ValueError(f"{len(self.hparams['class_names'])} class names for {self.num_classes} classes")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STAGE_KEY] = self.stage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse NaN/Inf weights (``load_from_checkpoint`` and the trainer's ``ckpt_path`` both pass here)."""
        check_finite_state(checkpoint.get("state_dict", {}), f"{type(self).__name__} checkpoint")

    def on_validation_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.batch_where = f"validation batch {batch_idx} (scenes {', '.join(batch[Key.SCENE])})"

    def on_test_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.batch_where = f"test batch {batch_idx} (scenes {', '.join(batch[Key.SCENE])})"

    def check_finite(self, what: str, values: Tensor) -> None:
        """Refuse NaN/Inf in a model output (no metric of a diverged model), naming ``what``, the batch and the
        step."""
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            where = getattr(self, "batch_where", "a batch")
            raise FloatingPointError(
                f"{type(self).__name__} at step {self.global_step}, {where}: {bad} of {values.numel()} {what} are "
                "NaN or Inf; the model has diverged, so it is not scored"
            )

    def optimiser_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of the optimiser: by default one group of every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        """Adam (lr ``lr``) with the ``lr_schedule`` (see the class doc), stepped every optimiser step."""
        optimiser = torch.optim.Adam(self.optimiser_groups(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "constant":
            return optimiser
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ValueError("lr_schedule='one_cycle' needs a finite fit: set trainer.max_epochs or max_steps")
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=[group["lr"] for group in optimiser.param_groups], total_steps=int(total),
            pct_start=self.hparams.warmup_fraction,
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def log_losses(self, stage: str, losses: Mapping[str, Tensor], batch_size: int) -> None:
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}", value, on_step=on_step, on_epoch=not on_step, batch_size=batch_size,
                prog_bar=name == "loss", sync_dist=not on_step,
            )

    def update_udf_metrics(self, pred: Tensor, batch: Batch) -> None:
        self.check_finite("predicted distances", pred)
        self.val_udf_error.update(pred, batch[Key.QUERY_UDF], batch[Key.QUERY_BAND])

    def update_semantic_metrics(self, logits: Tensor, labels: Tensor) -> None:
        self.check_finite("class logits", logits)
        pred = logits.argmax(dim=1)
        self.val_miou.update(pred, labels)
        self.val_f1.update(pred, labels)
        self.val_f1_per_class.update(pred, labels)
        self.log("val/miou", self.val_miou, on_epoch=True, on_step=False)
        self.log("val/f1", self.val_f1, on_epoch=True, on_step=False)

    def log_udf_error(self, metric: UDFError, name: str) -> None:
        """Log ``name`` and ``name/sigma_<σ>`` from a synchronised :class:`~ctxir.eval.metrics.UDFError`."""
        values = metric.compute()
        self.log(name, values["all"], sync_dist=False)
        for band, sigma in enumerate(self.sigmas):
            self.log(f"{name}/{sigma_name(sigma)}", values[band], sync_dist=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        if self.val_udf_error.update_called:
            self.log_udf_error(self.val_udf_error, "val/udf_mae")
        if self.num_classes and self.val_f1_per_class.update_called:
            per_class = self.val_f1_per_class.compute()  # synchronised across ranks
            for name, value in zip(self.class_names, per_class):
                self.log(f"val/f1/{name}", value, sync_dist=False)
            self.val_f1_per_class.reset()

    # -- test: the paper's protocol -----------------------------------------------------------------------
    def scene_fields(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """E_g (read by the UDF decoder) and the semantic decoder's features (``None`` without one)."""
        encodings = self.geometry.encode(batch[Key.POINTS], batch[Key.POINT_BATCH], batch.get(Key.ENCODINGS))
        return encodings, self.semantic_features(batch, encodings)

    def scene_mesh(self, points: Tensor, encodings: Tensor, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """``(vertices, faces)`` of one scene's surface, extracted from the UDF its ``encodings`` define."""

        def udf(queries: Tensor) -> Tensor:
            return self.geometry.distance(points, encodings, queries)

        return extract_mesh(udf, TEST_BOUNDS, resolution, device=points.device)

    def surface_points(self, points: Tensor, encodings: Tensor, seed: int) -> Tensor:
        """Extract one scene's surface from the UDF and sample ``test_num_points`` points on it."""
        vertices, faces = self.scene_mesh(points, encodings, self.hparams.test_resolution)
        if len(faces) == 0:
            return points.new_zeros(0, 3)
        samples, _ = sample_mesh_surface(vertices, faces, self.hparams.test_num_points, seed=seed)
        return torch.from_numpy(samples).to(points.device)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        if Key.EVAL_POINTS not in batch:
            raise RuntimeError("test batches need eval_points (GT surface samples): use the DataModule's test split")
        decoder = self.semantic_decoder_or_none()
        # E_g must not be an inference tensor: extraction differentiates the UDF through it
        with torch.inference_mode(False), torch.no_grad():
            encodings, features = self.scene_fields(batch)
            self.check_finite("encodings", encodings)
            for scene in range(num_clouds(batch)):
                rows = batch[Key.POINT_BATCH] == scene
                points = batch[Key.POINTS][rows]
                try:
                    pred = self.surface_points(points, encodings[rows], seed=scene)
                except FloatingPointError as error:
                    raise FloatingPointError(f"test scene {batch[Key.SCENE][scene]}: {error}") from None
                gt_rows = batch[Key.EVAL_BATCH] == scene
                gt_points, gt_labels = batch[Key.EVAL_POINTS][gt_rows], batch[Key.EVAL_LABELS][gt_rows]
                self.test_reconstruction.update(pred, gt_points)
                if self.test_semantics is not None and decoder is not None and features is not None:
                    logits = decoder(points, features[rows], pred)
                    self.check_finite("class logits", logits)
                    self.test_semantics.update(pred, logits.argmax(1), gt_points, gt_labels)

    def on_test_epoch_end(self) -> None:
        metrics = {k: float(v) for k, v in self.test_reconstruction.compute().items()}
        if self.test_semantics is not None and self.test_semantics.update_called:
            metrics.update({k: float(v) for k, v in self.test_semantics.compute().items()})
        with self.test_reconstruction.sync_context():  # compute() leaves the local count in place: all ranks' here
            metrics["num_scenes"] = float(self.test_reconstruction.num_scenes)
        self.log_dict({f"test/{k}": v for k, v in metrics.items()}, sync_dist=False)
        self.test_reconstruction.reset()
        if self.test_semantics is not None:
            self.test_semantics.reset()
