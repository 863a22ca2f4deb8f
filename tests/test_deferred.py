"""heterosymnn.deferred: loggers that import ``logging`` only when a message can go somewhere, and
package names whose modules load on first access."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

from heterosymnn.deferred import get_logger


def _fresh_process(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True)
    return {"report": json.loads(done.stdout.splitlines()[-1]), "stderr": done.stderr}


def test_debug_and_info_are_dropped_without_importing_logging():
    result = _fresh_process("""
        import json, sys
        from heterosymnn.deferred import get_logger
        log = get_logger("heterosymnn.test")
        log.debug("nobody hears %s", 1)
        log.info("nobody hears %s", 2)
        quiet = "logging" not in sys.modules
        log.warning("a warning goes through: %s", 3)
        print(json.dumps({"quiet": quiet, "imported": "logging" in sys.modules}))
    """)
    assert result["report"] == {"quiet": True, "imported": True}
    # logging's last-resort handler printed the warning, as a plain logger's would.
    assert "a warning goes through: 3" in result["stderr"]
    assert "nobody hears" not in result["stderr"]


def test_messages_reach_a_configured_handler(caplog):
    log = get_logger("heterosymnn.test.configured")
    with caplog.at_level(logging.DEBUG, logger="heterosymnn.test.configured"):
        log.debug("detail %d", 7)
        log.info("progress %s", "made")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "detail 7"), (logging.INFO, "progress made")]
    assert log.isEnabledFor(logging.DEBUG) is logging.getLogger("heterosymnn.test.configured").isEnabledFor(
        logging.DEBUG)
    assert log.name == "heterosymnn.test.configured"


def test_package_names_load_their_module_on_first_access():
    result = _fresh_process("""
        import json, sys
        import heterosymnn.cache as cache
        before = "heterosymnn.cache.manage" in sys.modules or "tarfile" in sys.modules
        listed = "prune" in dir(cache) and "export_bundle" in dir(cache)
        prune = cache.prune
        try:
            cache.no_such_name
        except AttributeError as exc:
            message = str(exc)
        print(json.dumps({"before": before, "listed": listed, "after": "heterosymnn.cache.manage" in sys.modules,
                          "same": prune is sys.modules["heterosymnn.cache.manage"].prune, "message": message}))
    """)
    assert result["report"] == {"before": False, "listed": True, "after": True, "same": True,
                                "message": "module 'heterosymnn.cache' has no attribute 'no_such_name'"}
