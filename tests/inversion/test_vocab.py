"""The CLIP vocabulary we build offline has open_clip's token ids, and the tokenizer folder reads it."""

from __future__ import annotations

from transformers import CLIPTokenizer

from inversion.model.vocab import BOS_TOKEN_ID, EOS_TOKEN_ID, VOCAB_SIZE, clip_vocab, write_clip_tokenizer


def test_token_ids_match_open_clips_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer().encoder  # open_clip names its special tokens <start_of_text>/<end_of_text>
    ours = clip_vocab()
    assert len(ours) == len(reference) == VOCAB_SIZE
    plain = {token: index for token, index in reference.items() if index < BOS_TOKEN_ID}
    assert {token: index for token, index in ours.items() if index < BOS_TOKEN_ID} == plain
    assert ours["<|startoftext|>"] == BOS_TOKEN_ID and ours["<|endoftext|>"] == EOS_TOKEN_ID


def test_written_tokenizer_encodes_text_like_open_clip(tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path))
    text = "a watercolor of a fluffy ginger cat, on a beach at noon!"
    assert tokenizer(text).input_ids == [BOS_TOKEN_ID, *SimpleTokenizer().encode(text), EOS_TOKEN_ID]
