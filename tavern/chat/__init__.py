"""One open chat: its prompt (`prompt_builder`), its replies (`reply`), its layout memory
(`layout`) and the `ChatSession` the fronts talk to (`session`)."""
