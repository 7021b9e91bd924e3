"""The web console (`segflow console`): a read-only ASGI app over the live feed, the components'
metrics, `observe.status` and the schema-change review. See `observe.console.app`."""
