"""Corpus → tokenizer → packed arrays + token_freq. Entry point: `prepare_data`."""
