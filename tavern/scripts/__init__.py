"""SillyTavern's regex scripts: the model, the run, where they live, and their JSON files."""
