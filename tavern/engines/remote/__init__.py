"""Remote backends: OpenAI-compatible, llama.cpp server, KoboldCpp and Ollama over HTTP."""
