"""The backend's log lines: ISO 8601 times in Beijing time with the offset, one handler on stderr."""
import datetime
import logging
import sys

from server.domain import BEIJING


class ZonedFormatter(logging.Formatter):
    """Times in ISO 8601 with their offset, in Beijing time: the zone of the API's times and order numbers."""

    def formatTime(self, record, datefmt=None):
        return datetime.datetime.fromtimestamp(record.created, BEIJING).isoformat(timespec="milliseconds")


def formatter():
    return ZonedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup(level, access_log):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    logging.basicConfig(level=level, handlers=[handler])
    if not access_log:  # a line per request is the proxy's job; errors are still logged
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
        logging.getLogger("simulator.access").setLevel(logging.WARNING)
