"""How a site governs its rules, the way CDS committees go live: beside the request path, never inside the
clinical engine.

* :mod:`.modes`: per rule ``on | shadow | off`` from the file named by ``CDS_RULES_FILE``. ``off`` rules are
  not evaluated; ``shadow`` cards are computed and audited (flagged), never returned to the EHR.
* :mod:`.versions`: a version of each rule, a digest of what it reads (card texts, thresholds, value sets;
  the mapping is data in ``cds_service/clinical/criteria/rule_inputs.yaml``), stored with every card.
* :mod:`.burden`: the alert-burden figures per rule and week (rates per 100 relevant orders, acceptance and
  override rates with Wilson intervals, override reasons, before/after a version change);
  :mod:`.report_html` draws them into one self-contained HTML file; :mod:`.demo` generates a synthetic
  audit history with known figures.
"""
