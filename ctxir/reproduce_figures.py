"""The reproduction's figures: Fig. 2's t-SNE panels and a reconstructed test room coloured by class.

Read from the checkpoints :mod:`ctxir.reproduce` wrote (geometry, context, joint), on the first test room:

* ``figures/tsne.png`` — t-SNE of E_g (geometry), E_c (context), E_g ⊕ E_c and the joint baseline's
  encodings of the room's input points, coloured by their ground-truth class;
* ``figures/scene.png`` — the surface extracted from the frozen UDF, sampled and coloured by the
  contextualised tuner's predicted class;
* ``figures/scene.ply`` — the extracted mesh with per-face predicted classes and class colours.

Both PNGs are logged to W&B (offline unless ``WANDB_MODE=online``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ctxir.cli import CONFIG_DIR, cli
from ctxir.core.surface import face_majority
from ctxir.eval.export import export_labelled_mesh
from ctxir.eval.figures import plot_tsne_panels, render_labelled_points
from ctxir.eval.sampling import sample_mesh_surface
from ctxir.tasks import ContextualisedTuner, UDFReconstructor

SCENE_POINTS = 100000
RENDER_RESOLUTION = 128


@torch.no_grad()
def make_figures(output: Path, overrides: list[str]) -> dict[str, str]:
    """Draw the figures for the runs under ``output``; ``overrides`` give the DataModule the runs used."""
    folder = output / "figures"
    config = CONFIG_DIR / "synthetic" / "context.yaml"
    geometry_ckpt = output / "geometry" / "checkpoints" / "best.ckpt"
    datamodule = cli(["--config", str(config), *overrides, f"--model.init_args.reconstructor_ckpt={geometry_ckpt}"],
                     run=False).datamodule
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    rows = batch["point_batch"] == 0
    points, labels, scene = batch["points"][rows], batch["point_labels"][rows], batch["scene"][0]
    point_batch = torch.zeros(len(points), dtype=torch.long)

    geometry = UDFReconstructor.load_from_checkpoint(geometry_ckpt).eval()
    context = ContextualisedTuner.load_from_checkpoint(output / "context" / "checkpoints" / "best.ckpt").eval()
    joint = UDFReconstructor.load_from_checkpoint(output / "joint" / "checkpoints" / "best.ckpt").eval()
    e_g = geometry.geometry.encode(points, point_batch)
    e_c = context.context_module(points, e_g, point_batch)
    features = torch.cat([e_g, e_c], dim=1)
    e_joint = joint.geometry.encode(points, point_batch)
    class_names = list(datamodule.class_names)
    target = labels.numpy()
    plot_tsne_panels(
        {"geometry E_g": (e_g.numpy(), target), "context E_c": (e_c.numpy(), target),
         "E_g ⊕ E_c": (features.numpy(), target), "joint": (e_joint.numpy(), target)},
        class_names, path=folder / "tsne.png", num_threads=1,  # see tsne_embedding: threads stall on busy cores
    )

    vertices, faces = context.scene_mesh(points, e_g, RENDER_RESOLUTION)
    if len(faces) == 0:
        return {"scene": scene, "note": "no surface extracted: the UDF never came below the threshold"}
    vertex_labels = context.semantic_decoder(points, features, torch.as_tensor(vertices, dtype=torch.float32))
    export_labelled_mesh(folder / "scene.ply", vertices, faces,
                         face_majority(vertex_labels.argmax(1).numpy(), faces), class_names)
    samples, _ = sample_mesh_surface(vertices, faces, SCENE_POINTS, seed=0)
    predicted = context.semantic_decoder(points, features, torch.from_numpy(samples).float()).argmax(1).numpy()
    render_labelled_points(samples, predicted, class_names, path=folder / "scene.png")
    log_images(output, {"figures/tsne": folder / "tsne.png", "figures/scene": folder / "scene.png"})
    return {"scene": scene, "tsne": str(folder / "tsne.png"), "render": str(folder / "scene.png"),
            "mesh": str(folder / "scene.ply"), "mesh_faces": int(len(faces))}


def log_images(output: Path, images: dict[str, Path]) -> Any:
    """Log PNGs to a W&B run of their own (offline unless ``WANDB_MODE=online``)."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="ctxir", name="reproduce-figures", save_dir=str(output),
                         offline=os.environ.get("WANDB_MODE") != "online")
    for key, path in images.items():
        logger.log_image(key=key, images=[str(path)])
    return logger
