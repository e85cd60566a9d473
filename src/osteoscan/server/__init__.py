"""The edge service: DICOM node, REST API with a durable job queue, and the web viewer.

``osteoscan serve`` starts it (:mod:`osteoscan.server.cli`); :class:`~osteoscan.server.service.Service`
holds the parts and :func:`~osteoscan.server.api.create_app` serves them. See ``docs/server.md``.
"""
