"""microturn.train"""
