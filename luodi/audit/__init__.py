"""Responsible-AI audit of a trained run (`luodi audit`): fairness, robustness, explanations, integrity and the
server's security settings on one page. `luodi.audit.report.audit` is the one entry point (CLI and HTTP)."""
