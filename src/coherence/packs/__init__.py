"""Cultural packs: schema, loader, authoring tools."""
