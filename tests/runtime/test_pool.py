"""DevicePool: jobs spread over sessions, order kept, failures surfaced."""

from __future__ import annotations

import numpy as np
import pytest

from osteoscan.errors import BackendError
from osteoscan.runtime import DevicePool, create_session


def test_pool_spreads_jobs_and_keeps_order(tiny3d, rt_config):
    path, _ = tiny3d
    rng = np.random.default_rng(0)
    jobs = [rng.random((2, 1, 16, 16, 16), dtype=np.float32) for _ in range(10)]
    pool = DevicePool.from_devices(path, ["cpu", "cpu"], backend="openvino", precision="fp32", config=rt_config,
                                   num_threads=1)
    out = pool.map(jobs)
    ref = create_session(path, backend="onnxruntime", config=rt_config)
    for j, o in zip(jobs, out):
        np.testing.assert_allclose(o["logits"], ref.infer(j)["logits"], atol=1e-4)
    st = pool.last_stats
    assert st is not None and st.n_jobs == 10 and sum(st.jobs_per_session) == 10 and st.jobs_per_s > 0
    assert st.devices == ("openvino/CPU", "openvino/CPU")


def test_pool_custom_job_function_and_mixed_backends(tiny3d, rt_config):
    path, _ = tiny3d
    sessions = [create_session(path, backend="openvino", precision="fp32", config=rt_config),
                create_session(path, backend="onnxruntime", config=rt_config)]
    pool = DevicePool(sessions)
    res = pool.map(list(range(6)), fn=lambda s, k: (k, s.info.backend))
    assert [r[0] for r in res] == list(range(6))
    assert {r[1] for r in res} <= {"openvino", "onnxruntime"}


def test_pool_reraises_the_first_failure(tiny3d, rt_config):
    path, _ = tiny3d
    pool = DevicePool([create_session(path, backend="onnxruntime", config=rt_config)])

    def bad(session, job):
        if job == 3:
            raise ValueError("job 3 broke")
        return job

    with pytest.raises(ValueError, match="job 3"):
        pool.map(list(range(6)), fn=bad)
    with pytest.raises(BackendError):
        DevicePool([])
