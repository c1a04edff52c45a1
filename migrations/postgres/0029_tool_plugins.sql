-- Tool-server plugins (the `tool-server` world, kind `tool`: MCP clients
-- such as the built-in `mcp`) join the registry.
ALTER TABLE plugins DROP CONSTRAINT plugins_kind_check;
ALTER TABLE plugins ADD CONSTRAINT plugins_kind_check
    CHECK (kind IN ('provider', 'router', 'condition', 'tool'));
