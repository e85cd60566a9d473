"""``osteoscan models``: import, list, verify, export through the real CLI entry point."""

from __future__ import annotations

import json

from osteoscan.cli import main


def test_models_import_list_verify_export(tmp_path, tiny3d, capsys):
    path, _ = tiny3d
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "in_channels": 1, "out_channels": 3, "input_names": ["image"], "output_names": ["logits"],
        "input_spacing_mm": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16], "size_divisor": 2,
        "normalisation": {"hu_min": -500.0, "hu_max": 1500.0},
    }))
    common = ["models", "--model-dir", str(tmp_path / "models"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "import", str(path), "--as", "site_seg", "--spec", str(spec)]) == 0
    assert "imported" in capsys.readouterr().out
    assert main([*common, "list"]) == 0
    out = capsys.readouterr().out
    assert "site_seg" in out and "onnx" in out
    assert main([*common, "verify", "site_seg", "--backends", "openvino,onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "| site_seg | openvino | CPU | fp32 |" in out and "NO" not in out.split("\n", 2)[2]
    assert main([*common, "export", "site_seg", "--out", str(tmp_path / "ir")]) == 0
    assert (tmp_path / "ir" / "site_seg.xml").is_file() and (tmp_path / "ir" / "site_seg.bin").is_file()


def test_models_import_bad_spec_exit_code(tmp_path, tiny3d):
    path, _ = tiny3d
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    rc = main(["models", "--model-dir", str(tmp_path / "m"), "import", str(path), "--as", "x", "--spec", str(spec)])
    assert rc == 2  # InputError
