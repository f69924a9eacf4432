"""The command line: click commands, thin (parse, call one function, print), one module per command group,
sharing one typed context (`context.Options`)."""
