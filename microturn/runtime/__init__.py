"""microturn.runtime"""
