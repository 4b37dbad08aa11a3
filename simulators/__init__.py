"""Stand-ins for the vendor systems Stafett connects (docs/vendor-formats.md).

Each subpackage is a runnable service with its own store, ids and format:
`python -m simulators.<name> --port P --data DIR [--seed]`.
"""
