"""The SDK's copy of the contract and its records agree with the repository's WIT."""

import dataclasses
import unittest

from support import CONTRACT, SDK_CONTRACT, camel, contract_types  # first: puts the SDK on sys.path

# isort: split
import portico_plugin
from portico_plugin import records


class ContractTest(unittest.TestCase):
    def test_the_sdk_ships_the_repositorys_contract(self):
        self.assertEqual(
            SDK_CONTRACT.read_bytes(),
            CONTRACT.read_bytes(),
            "copy wit/plugin.wit to plugins/sdk-python/wit/plugin.wit",
        )

    def test_the_sdk_names_the_contracts_version(self):
        self.assertIn(f"package {portico_plugin.CONTRACT};", CONTRACT.read_text())

    def test_every_record_has_the_contracts_fields_in_order(self):
        types = contract_types(CONTRACT.read_text())
        records_ = {name: names for name, (kind, names) in types.items() if kind == "record"}
        self.assertGreaterEqual(len(records_), 10)
        for name, fields in records_.items():
            with self.subTest(record=name):
                ours = [f.name for f in dataclasses.fields(getattr(records, name))]
                self.assertEqual(ours, fields)

    def test_every_enum_has_the_contracts_cases_in_order(self):
        for name, (kind, cases) in contract_types(CONTRACT.read_text()).items():
            if kind == "enum":
                with self.subTest(enum=name):
                    ours = getattr(records, name)
                    self.assertEqual([m.name for m in ours], cases)
                    self.assertEqual([m.value for m in ours], list(range(len(cases))))

    def test_every_variant_case_has_a_class(self):
        variants = [
            (name, cases)
            for name, (kind, cases) in contract_types(CONTRACT.read_text()).items()
            if kind == "variant"
        ]
        self.assertEqual([name for name, _ in variants], ["Subprotocols"])
        for name, cases in variants:
            for case in cases:
                self.assertTrue(
                    dataclasses.is_dataclass(getattr(records, name + camel(case))), case
                )

    def test_the_sdk_has_no_record_the_contract_lacks(self):
        types = contract_types(CONTRACT.read_text())
        expected = set(types)
        expected |= {
            name + camel(case)
            for name, (kind, cases) in types.items()
            if kind == "variant"
            for case in cases
        }
        expected -= {name for name, (kind, _) in types.items() if kind == "variant"}
        ours = {name for name in records.__all__ if isinstance(getattr(records, name), type)}
        self.assertEqual(ours, expected)


if __name__ == "__main__":
    unittest.main()
