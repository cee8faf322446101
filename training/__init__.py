"""Offline side of genrec: dataset loaders and splits, item tokenizer, fine-tuning, export, evaluation."""
