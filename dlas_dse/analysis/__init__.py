"""What a study tells its user, read from its storage: :mod:`.report` (trial and front tables),
:mod:`.report_writer` (the report folder), :mod:`.plots`, :mod:`.observations` (the paper's findings
tested with intervals), :mod:`.confirmed` (re-measured latencies) and :mod:`.dashboard`."""
