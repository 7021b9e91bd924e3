"""Local services for development, tests and CI: a Kafka broker and the Snowflake emulator.

    from runtime.services import emulator, kafka
    kafka.start()            # True if started now, False if it was running already
    emulator.status()        # ServiceStatus(name, running, pid, address, ready, managed)

Shell: `python -m runtime.services start|stop|status|kill|fetch [kafka|emulator]`.
"""

from runtime.services.layout import ServicePaths
from runtime.services.process import ServiceError, ServiceStatus

__all__ = ["ServiceError", "ServicePaths", "ServiceStatus"]
