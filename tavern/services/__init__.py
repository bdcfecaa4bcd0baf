"""The application's services, one job each, composed by `tavern.session.Tavern`: the engine
host, characters and chats, lorebooks, presets and formats, settings and personas."""
