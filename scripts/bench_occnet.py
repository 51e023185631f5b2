"""Benchmark Occlusion-Net: inference time per image of Keypoint R-CNN alone vs with the graph
head (same run, same weights, same detections), and the training-step time.

Both detectors share every weight; "Keypoint R-CNN alone" is torchvision's ``KeypointRCNN``
with its own keypoint post-processing (``heatmaps_to_keypoints``), "with graph head" replaces
that by the 2D/3D KGNN. The score threshold is 0 so that both see the same ``--detections``
boxes per image. Prints medians over ``--repeats`` and their ratio (target: the graph head adds
at most 10 %).

    python scripts/bench_occnet.py                       # synthetic size, ResNet-18-FPN
    python scripts/bench_occnet.py --backbone resnet50 --min-size 800 --max-size 1333
"""

from __future__ import annotations

import argparse
import logging
import statistics

import torch
from torchvision.models.detection import KeypointRCNN

from occaist.models.occlusion_net.heads import build_occlusion_rcnn
from occaist.models.occlusion_net.kgnn import KeypointGraphNet
from occaist.utils.timing import median_seconds

log = logging.getLogger("bench_occnet")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--min-size", type=int, default=256)
    parser.add_argument("--max-size", type=int, default=448)
    parser.add_argument("--image-height", type=int, default=240)
    parser.add_argument("--image-width", type=int, default=320)
    parser.add_argument("--detections", type=int, default=20, help="boxes per image")
    parser.add_argument("--hidden", type=int, default=128, help="KGNN hidden width (paper 512)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape-basis", default=None, help=".npz; default: 3D-KGNN off")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("occaist").setLevel(logging.ERROR)  # the random-weights warning
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    head = KeypointGraphNet(
        encoder_hidden=args.hidden,
        decoder_hidden=args.hidden,
        hidden_3d=args.hidden,
        use_3d=args.shape_basis is not None,
        shape_basis=args.shape_basis,
    )
    occ = build_occlusion_rcnn(
        head,
        backbone=args.backbone,
        min_size=args.min_size,
        max_size=args.max_size,
        box_detections_per_img=args.detections,
        box_batch_size_per_image=128,
    )
    plain = KeypointRCNN(
        occ.backbone,
        num_classes=2,
        num_keypoints=14,
        min_size=args.min_size,
        max_size=args.max_size,
        box_detections_per_img=args.detections,
    )
    plain.load_state_dict(
        {k: v for k, v in occ.state_dict().items() if "graph_head" not in k}, strict=True
    )
    for model in (occ, plain):
        model.roi_heads.score_thresh = 0.0
        model.eval()
    image = torch.rand(3, args.image_height, args.image_width)

    @torch.no_grad()
    def infer(model: torch.nn.Module) -> int:
        return len(model([image])[0]["boxes"])

    n_occ, n_plain = infer(occ), infer(plain)
    # interleave the two so that load from other processes hits both alike
    t_plain, t_occ = [], []
    for _ in range(args.repeats):
        t_plain.append(median_seconds(lambda: infer(plain), 1, warmup=0))
        t_occ.append(median_seconds(lambda: infer(occ), 1, warmup=0))
    med_plain, med_occ = statistics.median(t_plain), statistics.median(t_occ)

    logits = torch.randn(args.detections, 14, 56, 56)
    aspect = torch.ones(args.detections)
    with torch.no_grad():
        t_head = median_seconds(lambda: head.eval()(logits, aspect), args.repeats)

    occ.train()
    targets = [
        {
            "boxes": torch.tensor([[40.0, 50.0, 200.0, 170.0]]),
            "labels": torch.tensor([1]),
            "keypoints": torch.cat(
                [
                    torch.rand(1, 14, 2) * torch.tensor([160.0, 120.0])
                    + torch.tensor([40.0, 50.0]),
                    torch.randint(1, 3, (1, 14, 1)).float(),
                ],
                dim=-1,
            ),
        }
    ]

    def train_step() -> None:
        occ.zero_grad()
        sum(occ([image], targets).values()).backward()

    t_train = median_seconds(train_step, args.repeats)

    log.info("Occlusion-Net benchmark (CPU, %d thread(s); shared machine: noisy)", args.threads)
    log.info(
        "backbone %s, image %dx%d -> min_size %d, %d/%d detections, KGNN hidden %d, 3D-KGNN %s",
        args.backbone, args.image_width, args.image_height, args.min_size, n_plain, n_occ,
        args.hidden, "on" if args.shape_basis else "off",
    )  # fmt: skip
    log.info("inference / image, Keypoint R-CNN alone : %8.1f ms (median of %d)",
             1e3 * med_plain, args.repeats)  # fmt: skip
    log.info("inference / image, with graph head      : %8.1f ms", 1e3 * med_occ)
    log.info("ratio with/alone                        : %8.3f (target <= 1.10)",
             med_occ / med_plain)  # fmt: skip
    log.info("graph head alone on %d ROIs              : %8.1f ms", args.detections, 1e3 * t_head)
    log.info("training step (1 image, fwd+bwd)        : %8.1f ms", 1e3 * t_train)


if __name__ == "__main__":
    main()
