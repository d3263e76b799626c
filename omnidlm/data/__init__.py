"""Data: the character tokenizer of the tiny models, the synthetic digit-ops task, chat JSON lines.

    char_tokenizer  build_char_tokenizer(), special_ids(tok)
    synthetic       example(i), heldout(n), train_examples(n, seed), encode_example, score_exact
    chat_data       read_chat_jsonl, tokenize_chat, collate_sft, pack_examples
"""
