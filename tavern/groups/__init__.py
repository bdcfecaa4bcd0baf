"""SillyTavern group chats: the group file, its chats, and who speaks next."""
