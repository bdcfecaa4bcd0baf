"""The application's services, one job each, composed by `tavern.session.Tavern`: the engine
host (`engine_host`), the characters (`cards`), their chats (`chats`), lorebooks (`lorebooks`),
presets, formats and models (`presets`), the settings in use (`settings`) and a data home's
first start (`first_start`)."""
