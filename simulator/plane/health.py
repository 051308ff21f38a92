"""GET /sim/health: 200 once the simulator serves, with its version and how it was started (for scripts and CI)."""
import simulator
from simulator.plane.control import SimHandler


class SimHealthHandler(SimHandler):

    def get(self):
        v3 = self.state.v3
        self.reply({"status": "ok", "version": simulator.__version__,
                    "pay_version": self.application.settings.get("sim_pay_version", "v2"),
                    "key_mode": v3.key_mode if v3 is not None else None,
                    # the request came over the simulator's listener: its scheme is the simulator's
                    "tls": self.request.protocol == "https"})
