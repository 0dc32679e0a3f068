"""benchmarks/gpu_smoke.py on the CPU: the full-size table builds (meta device, published
parameter counts) and the dry run trains every registered family at tiny size."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from benchmarks import gpu_smoke  # noqa: E402
from tests.test_training import shards  # noqa: E402,F401  (fixture)
from training.families import FAMILIES  # noqa: E402

#: published parameter counts of the denoisers and T5-XXL's encoder (model cards, diffusers)
PUBLISHED = {("sd15", "unet"): 859.52e6, ("sdxl", "unet"): 2567.46e6,
             ("sd3.5-large", "transformer"): 8.06e9, ("flux-dev", "transformer"): 11.90e9,
             ("flux-dev", "text_encoder_2"): 4.762e9}  # fmt: skip


@pytest.mark.parametrize("name", list(gpu_smoke.FULL))
def test_full_size_table_builds_at_the_published_size(name):
    """Every table entry names real config keys and builds (on the meta device) at the
    parameter count its base is published with."""
    counts = gpu_smoke.parameter_counts(name)
    assert set(counts) == set(gpu_smoke.FULL[name]["components"])
    for (model, part), published in PUBLISHED.items():
        if model == name:
            assert counts[part] == pytest.approx(published, rel=2e-3), part


def test_a_typo_in_the_table_is_refused():
    bad = dict(gpu_smoke.FULL["sd15"]["components"]["unet"][1], block_channels=[1])
    assert gpu_smoke.unknown_keys("diffusers:UNet2DConditionModel", bad) == ["block_channels"]


def test_every_table_family_has_a_reference_script():
    """diffusers has a script per family; none for union models (xinsir released no code)."""
    single = {row["family"] for row in gpu_smoke.FULL.values() if "-union" not in row["family"]}
    assert single <= set(gpu_smoke.REFERENCE)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_dry_run_trains_each_registered_family(family, shards, tmp_path, capsys):  # noqa: F811
    """``gpu_smoke.py --dry-run`` for the family's models: random bf16 base written by the same
    code as the full-size one, trained 2 steps with and without gradient checkpointing."""
    from training.families import split_union
    from training.tiny_base import TINY

    names = [n for n, row in gpu_smoke.FULL.items() if row["family"] == family]
    assert names, f"family {family} has no full-size entry in benchmarks/gpu_smoke.py FULL"
    if split_union(family)[0] not in TINY:
        pytest.skip(f"no tiny-base writer for {family} in training/tiny_base.TINY")
    name = names[0]
    code = gpu_smoke.main(["--dry-run", "--models", name, "--data", str(shards),
                           "--work", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(f"| {name} | 64 |")]
    cached = gpu_smoke.has_cache_option() and not family.endswith("-union")  # union: uncached
    assert len(rows) == 2 * (2 if cached else 1), out
    assert all(float(r.split("|")[5]) > 0 for r in rows)  # steps/s measured
    assert (tmp_path / f"tiny-{name}" / ".complete").exists()


def test_families_without_registration_are_skipped_with_a_reason():
    run, skipped = gpu_smoke.families_to_run(list(gpu_smoke.FULL))
    assert {gpu_smoke.FULL[n]["family"] for n in run} <= set(FAMILIES)
    for line in skipped:
        assert "not registered" in line or "no tiny-base writer" in line
    assert len(run) + len(skipped) == len(gpu_smoke.FULL)
