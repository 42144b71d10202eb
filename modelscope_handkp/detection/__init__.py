"""Hand detectors for the top-down pipeline (see :mod:`.base` for which one to use)."""

# Lazily imported exports (PEP 562) keep `import modelscope_handkp.detection` light (no torch/cv2
# until used).  To add one, add `name: 'module'` to this dict rather than a second __getattr__.
_LAZY_EXPORTS = {
    'Detections': '.base',
    'HandDetector': '.base',
    'WholeImage': '.base',
    'GivenBoxes': '.base',
    'as_detections': '.base',
    'build_hand_detector': '.ssdlite',  # issue 3: native SSDLite-MobileNetV2 (mmdet 2.x layout)
    'SSDLiteHandDetector': '.ssdlite',
    'build_palm_detector': '.palm',  # issue 8: MediaPipe palm detector (BlazePalm) ported to PyTorch
    'PalmDetector': '.palm',
    'convert_palm_detector': '.tflite_convert',
}


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        import importlib
        return getattr(importlib.import_module(_LAZY_EXPORTS[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
