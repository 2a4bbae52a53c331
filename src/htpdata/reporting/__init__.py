"""Usage, quota and traffic reports over the cache tiers.

- :mod:`.traffic`: fold per-process journals into daily aggregates;
- :mod:`.collect`: a :class:`Report` from tier summaries, quotas and traffic;
- :mod:`.render`: CSV, Prometheus text, self-contained HTML with SVG charts;
- :mod:`.quota`: setting limits (operators only).
"""

from .collect import BY, Report, build_report
from .quota import OperatorOnlyError, is_operator, set_quota
from .render import to_csv, to_html, to_prometheus

__all__ = ["BY", "OperatorOnlyError", "Report", "build_report", "is_operator", "set_quota",
           "to_csv", "to_html", "to_prometheus"]
