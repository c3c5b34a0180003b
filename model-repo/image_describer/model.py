"""Triton python-backend vision model: Tesseract OCR plus measured facts describe an image in text."""

from kubechat.engines.python_backend import ImageDescriptionModel


class TritonPythonModel(ImageDescriptionModel):
    workers = 2  # OCR runs the tesseract binary: two images read at once keep two cores busy
