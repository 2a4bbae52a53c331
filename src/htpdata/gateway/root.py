"""PyROOT helpers for reading through the gateway.

The ROOT wheels on PyPI read ``http://`` with ROOT's own ``TWebFile`` (they have no Davix), but
ship its plugin entry broken ("method ... not found"): :func:`enable_http` registers it again,
which is what ``TFile::Open``, ``TChain`` and ``RDataFrame`` need. In C++ (a macro or
``root -l``) the same line is::

    gPluginMgr->AddHandler("TFile", "^http:", "TWebFile", "Net",
                           "TWebFile(const char*,Option_t*)");
"""

from __future__ import annotations

__all__ = ["enable_http"]

_done = False


def enable_http() -> None:
    """Make ROOT open ``http://`` URLs with ``TWebFile`` (idempotent; imports ROOT)."""
    global _done
    if _done:
        return
    import ROOT  # the htpdata[root-cpp] extra: pip install root

    ROOT.gPluginMgr.AddHandler("TFile", "^http:", "TWebFile", "Net",
                               "TWebFile(const char*,Option_t*)")
    _done = True
