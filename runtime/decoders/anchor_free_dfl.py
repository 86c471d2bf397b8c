"""Anchor-free DFL decode (YOLOv8 / A-YOLOM style). Written by the decoder work."""
