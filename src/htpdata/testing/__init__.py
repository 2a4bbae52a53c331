"""Real servers for tests, the demo and benchmarks: free loopback ports, stopped by PID."""

from .servers import XRootDServer, free_port, sigint_as_in_a_terminal, wait_for_port

__all__ = ["XRootDServer", "free_port", "sigint_as_in_a_terminal", "wait_for_port"]
