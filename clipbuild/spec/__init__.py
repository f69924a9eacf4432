"""Species profiles as a specification: YAML with locations, the schema, inheritance, the resolved model,
semantic checks and disk geometry."""
