"""Inbound messages: SMS replies and keywords (email links come with the web inbox).

``sms_commands`` reads what an SMS asks (pure), ``answers`` matches an approver's reply
code, ``store`` keeps each SMS in Redis until it is finished, and ``actions`` does what an
SMS asks together with its finishing, in one transaction each.
"""
