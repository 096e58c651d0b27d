-- An ISPmail database made by hand on MariaDB: exactly the guide's statements.
CREATE TABLE IF NOT EXISTS `virtual_domains` (`id` int(11) NOT NULL auto_increment, `name` varchar(50) NOT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8;
CREATE TABLE IF NOT EXISTS `virtual_users` (`id` int(11) NOT NULL auto_increment, `domain_id` int(11) NOT NULL, `email` varchar(100) NOT NULL, `password` varchar(150) NOT NULL, `quota` bigint(11) NOT NULL DEFAULT 0, PRIMARY KEY (`id`), UNIQUE KEY `email` (`email`), FOREIGN KEY (domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE) ENGINE=InnoDB DEFAULT CHARSET=utf8;
CREATE TABLE IF NOT EXISTS `virtual_aliases` (`id` int(11) NOT NULL auto_increment, `domain_id` int(11) NOT NULL, `source` varchar(100) NOT NULL, `destination` varchar(100) NOT NULL, PRIMARY KEY (`id`), FOREIGN KEY (domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE) ENGINE=InnoDB DEFAULT CHARSET=utf8;

-- Rows, inserted the way the ISPmail guide does it (domain ids looked up by name).
INSERT INTO virtual_domains (name) VALUES ('example.org');
INSERT INTO virtual_domains (name) VALUES ('example.com');
INSERT INTO virtual_domains (name) VALUES ('old.example');
INSERT INTO virtual_domains (name) VALUES ('xn--bcher-kva.de');
INSERT INTO virtual_domains (name) VALUES ('example.net');
-- A domain given up long ago: ids have a gap, as in a database that has lived.
DELETE FROM virtual_domains WHERE name='old.example';

INSERT INTO virtual_users (domain_id, email, password) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'john@example.org', '{BLF-CRYPT}$2y$05$KUdmPwSgibYETnkDnZhS3eZId0lbMYHcZHNYK1BYHoZQnQ8aMx1y2');
INSERT INTO virtual_users (domain_id, email, password, quota) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'jane@example.org', '{SHA512-CRYPT}$6$lbjI5jPlVvi4jzLN$TkdnjxFK/opxQet7vEJlYsWqjUwu5Tt1ntPuLSC0avGEr1nirfLUzqMpsGShOxYsvyfRXLpSDKsQh/fiPy.G9.', 1073741824);
INSERT INTO virtual_users (domain_id, email, password, quota) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'leaver@example.org', '{BLF-CRYPT}$2y$05$oeQ5dOM7jkX19yjM4q9dEOLdwGzSeAYe34Sj4oUSEXIw9GmrXcYM.', 0);
INSERT INTO virtual_users (domain_id, email, password, quota) VALUES ((SELECT id FROM virtual_domains WHERE name='example.com'), 'bob@example.com', '{BLF-CRYPT}$2y$05$oeQ5dOM7jkX19yjM4q9dEOLdwGzSeAYe34Sj4oUSEXIw9GmrXcYM.', 5368709120);
INSERT INTO virtual_users (domain_id, email, password, quota) VALUES ((SELECT id FROM virtual_domains WHERE name='xn--bcher-kva.de'), 'info@xn--bcher-kva.de', '{SHA512-CRYPT}$6$mIfBO21q9AQgDw24$Be2MufK1nhxj28KQQC7cioMXhqHw4jL0vnd8.TafVPM2yew5MEwbfzSIQKFDdpTc77xD83dKkuV62ycG8YnS4/', 2147483648);
DELETE FROM virtual_users WHERE email='leaver@example.org';

INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'jack@example.org', 'john@example.org');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'info@example.org', 'john@example.org');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'info@example.org', 'jane@example.org');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), '@example.org', 'john@example.org');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'jane.doe@example.org', 'jane@example.org');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.org'), 'jane.doe@example.org', 'jane.private@freemail.example');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.com'), 'postmaster@example.com', 'bob@example.com');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.com'), 'postmaster@example.com', 'john@example.org');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.com'), 'sales@example.com', 'bob@example.com');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='example.com'), 'sales@example.com', 'orders@supplier.example');
INSERT INTO virtual_aliases (domain_id, source, destination) VALUES ((SELECT id FROM virtual_domains WHERE name='xn--bcher-kva.de'), 'kontakt@xn--bcher-kva.de', 'info@xn--bcher-kva.de');
