"""The device's pydantic-free report.json reader: the same values as the converter's ConversionReport for
every field the agent uses, and a clear error naming the field for each kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converters.report import ConversionReport
from device_agent.model_manager import ModelArtifact, ModelChain
from device_agent.report_reader import ReportFieldError, parse_device_report, read_device_report
from device_agent.runtime.base import ModelLoadError
from firmware_stubs.hardware_profiles import PI_ZERO_2W


def _first_level(chain_dir: Path) -> Path:
    return ModelChain.from_dir(chain_dir).levels[0].directory


def test_reader_agrees_with_the_converters_report_on_every_field_the_agent_reads(chain_dir: Path) -> None:
    for level in ModelChain.from_dir(chain_dir).levels:
        full = ConversionReport.read(level.directory)
        lean = read_device_report(level.directory / "report.json")
        assert (lean.name, lean.version) == (full.name, full.version)
        assert set(lean.variants) == set(full.variants)
        for name, v in full.variants.items():
            lv = lean.variants[name]
            assert (lv.file, lv.sha256, lv.bytes, lv.ram_bytes, lv.status) == (
                v.file, v.sha256, v.bytes, v.ram_bytes, v.status
            )
            assert lv.output.quantization.scale == v.output.quantization.scale
            assert lv.input.shape == v.input.shape and lv.output.dtype == v.output.dtype
        assert {k: f.default_variant for k, f in lean.hardware_fit.items()} == {
            k: f.default_variant for k, f in full.hardware_fit.items()
        }
        assert (lean.tflm is None) == (full.tflm is None)
        if full.tflm is not None and lean.tflm is not None:
            assert lean.tflm.arena_bytes == full.tflm.arena_bytes
            assert lean.tflm.max_abs_diff_vs_litert_int8 == full.tflm.max_abs_diff_vs_litert_int8
        assert lean.golden.file == full.golden.file
        assert {k: (t.tolerance, t.top1_agreement) for k, t in lean.golden.tolerances.items()} == {
            k: (t.tolerance, t.top1_agreement) for k, t in full.golden.tolerances.items()
        }
        fb, lb = full.baselines, lean.baselines
        assert lb.feature_spec.input_shape == fb.feature_spec.input_shape
        assert (lb.feature_spec.axis, lb.feature_spec.group_bounds) == (fb.feature_spec.axis,
                                                                        fb.feature_spec.group_bounds)
        assert [(h.name, h.edges, h.counts) for h in lb.features] == [
            (h.name, h.edges, h.counts) for h in fb.features
        ]
        assert lb.output_score_spec.class_ids == fb.output_score_spec.class_ids
        assert lb.output_score.edges == fb.output_score.edges
        assert {k: (a.bytes, a.sha256) for k, a in lean.artifacts.items()} == {
            k: (a.bytes, a.sha256) for k, a in full.artifacts.items()
        }


def _mutated(chain_dir: Path, change) -> str:  # type: ignore[no-untyped-def]
    obj = json.loads((_first_level(chain_dir) / "report.json").read_text())
    change(obj)
    return json.dumps(obj)


def _first_variant(obj: dict) -> str:
    return sorted(obj["variants"])[0]


@pytest.mark.parametrize(
    ("change", "loc", "msg"),
    [
        (lambda o: o.pop("baselines"), "baselines", "field required"),
        (lambda o: o["variants"][_first_variant(o)].update(sha256=7), "variants.{v}.sha256",
         "must be a string"),
        (lambda o: o["variants"][_first_variant(o)].update(ram_bytes=True), "variants.{v}.ram_bytes",
         "must be an integer"),
        (lambda o: o["golden"]["tolerances"][_first_variant(o)].update(tolerance="x"),
         "golden.tolerances.{v}.tolerance", "must be a number"),
        (lambda o: o["baselines"]["features"][0]["edges"].pop(), "baselines.features[0].edges", "edges for"),
        (lambda o: o["baselines"]["feature_spec"].update(axis=9), "baselines.feature_spec.axis", "outside"),
        (lambda o: o.update(hardware_fit=[]), "hardware_fit", "must be an object"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(chain_dir: Path, change, loc: str, msg: str) -> None:  # type: ignore[no-untyped-def]
    obj = json.loads((_first_level(chain_dir) / "report.json").read_text())
    want = loc.format(v=_first_variant(obj))
    with pytest.raises(ReportFieldError, match=msg) as info:
        parse_device_report(_mutated(chain_dir, change))
    assert info.value.loc == want


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(ReportFieldError, match="not JSON"):
        parse_device_report(b"{trunc")
    with pytest.raises(ReportFieldError, match="must be an object"):
        parse_device_report(b"[1, 2]")


def test_a_bad_report_is_a_load_error_naming_file_and_field_and_changes_nothing(
    chain_dir: Path, tmp_path: Path
) -> None:
    d = tmp_path / "m"
    shutil.copytree(_first_level(chain_dir), d)
    obj = json.loads((d / "report.json").read_text())
    v = _first_variant(obj)
    obj["variants"][v]["file"] = None
    (d / "report.json").write_text(json.dumps(obj))
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    match = rf"report\.json: not a valid conversion report: variants\.{v}\.file"
    with pytest.raises(ModelLoadError, match=match):
        ModelArtifact.from_dir(d, PI_ZERO_2W)
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before


def test_bad_chain_field_is_named(chain_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(chain_dir, d, symlinks=True)
    obj = json.loads((d / "chain.json").read_text())
    obj["metadata"]["positive_class_ids"] = ["one"]
    (d / "chain.json").write_text(json.dumps(obj))
    with pytest.raises(ModelLoadError, match=r"metadata\.positive_class_ids\[0\]: must be an integer"):
        ModelChain.from_dir(d)
