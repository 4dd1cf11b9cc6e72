"""The stream: words, timelines (recorded or planned sessions), scenario sets, tokenizer, micro-turn layout."""
