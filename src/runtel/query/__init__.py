"""The read side: ``tracker`` (queries over recorded runs and their lineage), ``notebook``
(``runtel.load``) and ``replay`` (send a recorded run to an OTLP endpoint). It reads run folders
through ``runtel.rundir`` only and never imports the recording side.
"""
