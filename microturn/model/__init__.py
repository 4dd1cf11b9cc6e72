"""microturn.model"""
