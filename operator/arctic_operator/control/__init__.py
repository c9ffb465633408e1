"""Closing the loop: the operator reads the engines' Prometheus metrics and sets the replica count
and each pod's speculation cap.

Pure planning, thin I/O (the same split as ``plan``/``reconcile``):

* ``metrics``  -- pure: Prometheus text -> ``PodSample`` (tolerates vLLM metric renames), and a
  short per-pod window (``MetricsWindow``) summarised into ``PodWindow`` (means, acceptance rate).
* ``replicas`` -- pure: ``decide_replicas(policy, observation, state) -> (decision, state)``,
  an HPA-like policy (targets per replica, tolerance band, fast scale-up / slow stabilized
  scale-down windows, cooldowns, min/max, no scale-down while pods load or metrics are missing).
* ``cap``      -- pure: ``decide_cap(policy, observation, state) -> (decision, state)``, the
  speculation cap from running/waiting requests and measured acceptance (break-even batch size
  from a verify-cost model, queue pressure, hysteresis, dwell time, step limits).
* ``scrape``, ``admin_client``, ``controller`` -- I/O: scraping pods with bounded concurrency and
  timeouts, pushing caps through the runtime's admin API, and one ``ServiceController`` per
  ArcticInferenceService that ties them together (driven by a kopf timer in ``handlers``).
"""
