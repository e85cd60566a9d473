"""Training and evaluation of the cascade's models on the procedural phantom.

``osteoscan.train.cli`` (``osteoscan train MODEL``) and ``osteoscan.train.evaluate_cli``
(``osteoscan evaluate``) are the entry points. Data are synthesised on the fly by
:mod:`osteoscan.train.datasets` from :mod:`osteoscan.phantom` (numpy/scipy only, so it runs on the GPU
machine too); the torch parts live in ``loop``, ``losses``, ``export`` and ``flops``.
"""
