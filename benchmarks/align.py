"""Weight matching on a ResNet-18 width-64 pair: zoo.align against `rebasin` (PyPI), on CPU.

`rebasin` (PermutationCoordinateDescent, a PyTorch port of Git Re-Basin's weight matching that
finds the permutations by tracing the model graph) solves the same problem with the same
algorithm. Two pairs, both at the full ResNet-18 shape (11.2M parameters at width 64):
  - independent: two independently initialized models (no right answer; the objective
    Σ⟨W_A, π(W_B)⟩ each tool reaches is printed — higher is better);
  - permuted copy: B = a random permutation of A plus Gaussian noise of 0.5x the weights' std,
    where the planted permutation is the right answer: the fraction of units recovered is printed.
Times are the best of `--repeats` runs, each including everything the tool needs (rebasin:
graph tracing; zoo.align: reading the spec from the state dict). Both run on all cores.

Run: pip install rebasin==0.0.47 && python benchmarks/align.py
"""

import argparse
import copy
import time

import torch

from zoo.align.matching import NOT_MATCHED, weight_matching
from zoo.align.permutation import apply, random_perms, spec_for
from zoo.models import build

CFG = {"name": "resnet", "depth": 18, "width": 64}


def objective(a: dict, b: dict) -> float:
    return sum(
        float((a[n].double() * b[n].double()).sum())
        for n in a
        if n.rsplit(".", 1)[-1] not in NOT_MATCHED and a[n].is_floating_point()
    )


def ours(a: torch.nn.Module, b: torch.nn.Module) -> tuple[float, dict, int]:
    start = time.perf_counter()
    sa, sb = a.state_dict(), b.state_dict()
    spec = spec_for("resnet", sa)
    matching = weight_matching(spec, sa, sb)
    aligned = apply(spec, matching.perms, sb)
    return time.perf_counter() - start, aligned, matching.iterations


def reference(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> tuple[float, dict, int]:
    from rebasin import PermutationCoordinateDescent

    b = copy.deepcopy(b)
    start = time.perf_counter()
    pcd = PermutationCoordinateDescent(a, b, x)
    steps, step = [0], pcd._calculate_permutations_step

    def counted(loop):
        steps[0] += 1
        return step(loop)

    pcd._calculate_permutations_step = counted  # to count its sweeps, as `iterations` counts ours
    pcd.rebasin()
    return time.perf_counter() - start, b.state_dict(), steps[0]


def pairs() -> dict[str, tuple[torch.nn.Module, torch.nn.Module, dict | None]]:
    torch.manual_seed(0)
    a = build(CFG).eval()
    torch.manual_seed(1)
    independent = build(CFG).eval()
    sa = a.state_dict()
    spec = spec_for("resnet", sa)
    planted = random_perms(spec, sa, torch.Generator().manual_seed(2))
    noisy = {
        n: t + 0.5 * t.float().std() * torch.randn(t.shape) if t.is_floating_point() and t.dim() > 1 else t
        for n, t in apply(spec, planted, sa).items()
    }
    copy_b = build(CFG).eval()
    copy_b.load_state_dict(noisy)
    return {"independent": (a, independent, None), "permuted copy": (a, copy_b, planted)}


def recovered(spec: dict, sa: dict, aligned: dict) -> float:
    """Fraction of conv/linear output units of A whose row aligned B puts back in place."""
    rows = [n for n, axes in spec.items() if len(axes) >= 2 and axes[0] is not None]
    hits = sum(int((torch.cosine_similarity(sa[n].flatten(1), aligned[n].flatten(1)) > 0.8).sum()) for n in rows)
    return hits / sum(sa[n].shape[0] for n in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x = torch.randn(2, 3, 32, 32)
    ratios = []
    for name, (a, b, planted) in pairs().items():
        sa = a.state_dict()
        spec = spec_for("resnet", sa)
        t_ours, aligned, it_ours = min((ours(a, b) for _ in range(args.repeats)), key=lambda r: r[0])
        t_ref, ref_aligned, it_ref = min((reference(a, b, x) for _ in range(args.repeats)), key=lambda r: r[0])
        twin = copy.deepcopy(b)
        twin.load_state_dict(aligned)
        assert torch.allclose(twin(x), b(x), atol=1e-4), "zoo.align changed the function"
        print(
            f"{name}: zoo.align {t_ours:.2f} s, {it_ours} sweeps, objective {objective(sa, aligned):.4g}"
            + (f", units recovered {recovered(spec, sa, aligned):.1%}" if planted else "")
        )
        print(
            f"{name}: rebasin   {t_ref:.2f} s, {it_ref} sweeps, objective {objective(sa, ref_aligned):.4g}"
            + (f", units recovered {recovered(spec, sa, ref_aligned):.1%}" if planted else "")
        )
        print(f"{name}: ratio {t_ref / t_ours:.1f}x")
        ratios.append(t_ref / t_ours)
    print(f"speedup: {(ratios[0] * ratios[1]) ** 0.5:.1f}x")


if __name__ == "__main__":
    main()
