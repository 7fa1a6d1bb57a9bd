"""TFLM export and probes against the real tflite-micro interpreter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from converters.tflite_inspect import operator_names
from converters.tflm_export import c_array_sources, c_identifier, parse_c_array
from converters.tflm_probe import TflmProbe


def test_c_identifier_sanitises_names() -> None:
    assert c_identifier("kws-v2.1") == "kws_v2_1"
    assert c_identifier("9lives") == "m_9lives"
    assert re.fullmatch(r"[A-Za-z_]\w*", c_identifier("ü ber"))


def test_c_array_round_trips_bytes_and_declares_symbols() -> None:
    data = bytes(range(256)) * 3 + b"\x01"
    src = c_array_sources(data, "demo")
    assert parse_c_array(src.source) == data
    assert "alignas(16) const unsigned char demo_model_data[]" in src.source
    assert f"const unsigned int demo_model_data_len = {len(data)};" in src.source
    assert "extern const unsigned char demo_model_data[];" in src.header
    assert "extern const unsigned int demo_model_data_len;" in src.header


def test_exported_array_matches_full_int8_and_compiles(converted, tmp_path: Path) -> None:
    report = converted.report
    out = converted.out_dir
    model = (out / "full_int8.tflite").read_bytes()
    source = (out / report.tflm.source_file).read_text()
    assert parse_c_array(source) == model
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed; byte round trip checked above")
    main = tmp_path / "main.cc"
    a = report.tflm.array_name
    main.write_text(
        f'#include "{Path(report.tflm.header_file).name}"\n#include <cstdio>\n#include <cstdint>\n'
        f"int main() {{ if ((uintptr_t){a} % 16) return 3;\n"
        f'  std::printf("%u %c%c%c%c", {a}_len, {a}[4], {a}[5], {a}[6], {a}[7]); return 0; }}\n'
    )
    exe = tmp_path / "check"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-I",
            str(out / "tflm"),
            str(main),
            str(out / report.tflm.source_file),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout == f"{len(model)} TFL3"


def test_measured_arena_is_the_minimum_that_invokes(converted) -> None:
    model = (converted.out_dir / "full_int8.tflite").read_bytes()
    arena = converted.report.tflm.arena_bytes
    assert arena is not None and arena > 0
    with TflmProbe() as probe:
        assert probe.invoke(model, arena).ok
        too_small = probe.invoke(model, arena - 1)
    assert not too_small.ok
    # The failure was contained in the child: this process and the worker both survived it.
    assert too_small.signal is not None or "allocate" in too_small.log.lower()


def test_too_small_arena_crash_is_contained(converted) -> None:
    model = (converted.out_dir / "full_int8.tflite").read_bytes()
    with TflmProbe() as probe:
        results = [probe.invoke(model, size) for size in (64, 512, 1024)]
        assert not any(r.ok for r in results)
        assert probe.invoke(model, 1 << 20).ok  # the worker is still alive after the failures


def test_tflm_outputs_agree_with_report(converted, digits) -> None:
    report = converted.report
    model = (converted.out_dir / "full_int8.tflite").read_bytes()
    q = report.variants["full_int8"].input.quantization
    x = np.clip(np.round(digits.x_eval[:50] / q.scale) + q.zero_point, -128, 127).astype(np.int8)
    with TflmProbe() as probe:
        raw = probe.run(model, report.tflm.arena_bytes, x)
    assert raw.shape == (50, 10) and raw.dtype == np.int8
    assert report.tflm.accuracy is not None and report.tflm.agreement_with_litert is not None
    # TFLM and LiteRT run the same int8 graph: top-1 must agree on almost every sample.
    assert report.tflm.agreement_with_litert >= 0.97
    assert abs((raw.argmax(1) == digits.y_eval[:50]).mean() - report.variants["full_int8"].accuracy) < 0.15


def test_missing_ops_are_named(converted) -> None:
    ops = operator_names((converted.out_dir / "full_int8.tflite").read_bytes())
    with TflmProbe() as probe:
        assert probe.missing_ops(ops) == []
        assert probe.missing_ops(["TOPK_V2", "FULLY_CONNECTED", "CUSTOM:NoSuchOp"]) == [
            "TOPK_V2",
            "CUSTOM:NoSuchOp",
        ]


def test_op_codes_unknown_to_the_schema_are_probed_by_number() -> None:
    from converters.tflite_inspect import builtin_code, single_op_model

    assert builtin_code("BUILTIN_9") == builtin_code("FULLY_CONNECTED")
    with TflmProbe() as probe:
        assert probe.missing_ops(["BUILTIN_9", "BUILTIN_9999"]) == ["BUILTIN_9999"]
    assert single_op_model("BUILTIN_9999")[4:8] == b"TFL3"
