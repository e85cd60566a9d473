"""The edge path never imports torch: importing the runtime and running OpenVINO / ONNX Runtime
sessions (including backend='auto' on a CPU machine) leaves ``torch`` out of ``sys.modules``."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_runtime_import_and_openvino_session_do_not_import_torch(tiny3d, tmp_path):
    path, _ = tiny3d
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import osteoscan.runtime as rt
        assert "torch" not in sys.modules, "import osteoscan.runtime imported torch"
        assert "openvino" not in sys.modules and "onnxruntime" not in sys.modules
        cfg = rt.RuntimeConfig(cache_dir=__import__("pathlib").Path({str(tmp_path / "c")!r}),
                               model_dir=__import__("pathlib").Path({str(tmp_path / "m")!r}))
        x = np.zeros((1, 1, 16, 16, 16), np.float32)
        for backend in ("openvino", "onnxruntime", "auto"):
            s = rt.create_session({str(path)!r}, backend=backend, precision="fp32", config=cfg)
            s.infer(x)
            rt.sliding_window_inference(s, x[0], (16, 16, 16))
        print("backend", s.info.backend)
        assert "torch" not in sys.modules, "an edge session imported torch"
        print("OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK" in res.stdout


def test_cli_models_list_does_not_import_torch():
    code = ("import sys; from osteoscan.cli import main; rc = main(['-q', 'models', 'list']); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "back-ends and devices here" in res.stdout
