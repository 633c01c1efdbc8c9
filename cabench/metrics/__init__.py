"""Evaluation metrics: COCO AP (pycocotools), VOC2007 11-point mAP, and mIoU from a confusion matrix."""
